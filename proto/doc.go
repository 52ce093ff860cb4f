// Package proto defines Meridian's wire contracts: the NATS subjects, the
// versioned messages that flow between gateways, aggregators and edges, and
// the Kairos-compatible /ws/metrics events that clients see.
//
// Everything here is a pure value type or a pure function; there is no I/O and
// no shared state, so every function is safe for concurrent use. Decoders
// validate what they accept and return errors wrapping the sentinels below, so
// callers can branch with errors.Is; they never panic on any input (each has a
// Fuzz test).
//
// Versioning: every NATS message carries "v". A decoder accepts the versions it
// knows and rejects others with ErrUnsupportedVersion. Fields are only ever
// added; a reader ignores fields it does not know.
package proto

import "errors"

var (
	// ErrMalformed means the bytes are not a well-formed message of the
	// expected kind (bad JSON, wrong types, missing or inconsistent fields).
	ErrMalformed = errors.New("malformed message")
	// ErrUnsupportedVersion means the message is well-formed JSON but of a
	// version this build does not understand.
	ErrUnsupportedVersion = errors.New("unsupported message version")
	// ErrInvalidSubscription means a client's subscription message was
	// rejected; the wrapped text names the problem and the valid values.
	ErrInvalidSubscription = errors.New("invalid subscription")
)
