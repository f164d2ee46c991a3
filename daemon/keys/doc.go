// Package keys is users' SSH key pairs, as the cloud's: a pair kilnd makes (ed25519 or
// RSA; its private key is in create's answer and kept nowhere), or a public key a user
// imports; each with the cloud's fingerprint, per owner by name. An instance launched
// with one gets its public key through its NoCloud seed.
package keys
