// Package natsauth is Meridian's least-privilege model for NATS: which
// subjects each role may publish and subscribe to, the NATS authorization
// configuration that enforces it, and the generation of the keys and
// certificates a secure cluster needs (a CA, the NATS servers' certificate,
// one NKey per role and, for mutual TLS, one client certificate per role).
//
// Identities are static NKey users in the server's authorization block, each
// with explicit permissions (see Permissions): the server configuration holds
// public keys only, each role keeps its own seed, and every permission is
// readable in one file. Accounts with user JWTs and templated permissions
// would let a gateway's allowed subject follow from its name without touching
// the servers, but need an operator, an account resolver and per-account
// JetStream limits; Meridian's roles are few and fixed, so static users are
// the smaller and more auditable mechanism.
//
// Everything here is a pure function of its inputs or writes only under the
// directory it is given; it is safe for concurrent use.
package natsauth
