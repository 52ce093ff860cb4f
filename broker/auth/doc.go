// Package auth verifies and mints the JWT bearer tokens that Meridian's edge
// accepts, and says which scopes a verified token may read.
//
// A Verifier checks a token's signature against the configured keys (an HMAC
// secret, RSA/ECDSA/Ed25519 public keys, and/or a JWKS URL refreshed in the
// background), its exp (required) and nbf with a small leeway, and its aud
// and iss when configured. Only the algorithms of the configured key kinds
// are accepted, so a token cannot pick its own verification method ("none",
// or HS256 signed with a public key). The optional "scopes" claim restricts
// what the token may read: an array of "cluster", "region.<r>",
// "instance.<i>" or "*"; absent means every scope.
//
// Tokens reach a server in an "Authorization: Bearer" header, a
// "?token=" query parameter or a "bearer.<jwt>" Sec-WebSocket-Protocol value;
// Extract picks the one present and refuses ambiguous requests.
//
// # Concurrency
//
// A Verifier is safe for concurrent use; Close stops its JWKS refresh. Grant
// values are immutable.
package auth
