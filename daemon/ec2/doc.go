// Package ec2 is kilnd's second door: EC2's Query API (API version 2016-11-15), for the
// aws CLI, the SDKs and the tools built on them.
//
// A request's Signature Version 4 is verified with an access key of a Unix user's
// (Keys); the caller is that user. The action's parameters are translated into calls
// of kiln's own API, made in process through daemon/client with the caller in the
// request's context, so every rule is the socket's and exists once. What only EC2 has
// stays here: signatures, the XML answers and errors in EC2's shapes, reservations,
// client tokens, paging and DryRun. docs/ec2.md says what is implemented and how kiln's
// model maps onto EC2's.
package ec2
