package ec2

import (
	"encoding/xml"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"kiln/daemon/api"
	"kiln/internal/ids"
)

// Namespace is the XML namespace of EC2's answers (API version 2016-11-15).
const Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

// APIVersion is the one Version the door speaks.
const APIVersion = "2016-11-15"

// EC2's error codes that kiln's own API has no word for.
const (
	codeAuthFailure                = "AuthFailure"
	codeSignatureDoesNotMatch      = "SignatureDoesNotMatch"
	codeIncompleteSignature        = "IncompleteSignature"
	codeMissingAuthenticationToken = "MissingAuthenticationToken"
	codeRequestExpired             = "RequestExpired"
	codeDryRunOperation            = "DryRunOperation"
	codeInvalidAction              = "InvalidAction"
	codeMissingAction              = "MissingAction"
	codeMissingParameter           = "MissingParameter"
	codeInvalidParameter           = "InvalidParameter"
	codeInvalidParameterValue      = "InvalidParameterValue"
	codeInvalidParameterCombo      = "InvalidParameterCombination"
	codeUnknownParameter           = "UnknownParameter"
	codeNoSuchVersion              = "NoSuchVersion"
	codeIncorrectInstanceState     = "IncorrectInstanceState"
	codeIncorrectState             = "IncorrectState"
	codeIdempotentMismatch         = "IdempotentParameterMismatch"
	codeInvalidPaginationToken     = "InvalidPaginationToken"
	codeUnauthorizedOperation      = "UnauthorizedOperation"
	codeInternalError              = "InternalError"
	codeUnavailable                = "Unavailable"
	codeRequestLimitExceeded       = "RequestLimitExceeded"
	codeUnsupportedOperation       = "UnsupportedOperation"
)

// Error is an EC2 error answer.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(code, format string, a ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, a...)}
}

// status is the HTTP status EC2 answers a code with.
func (e *Error) status() int {
	switch e.Code {
	case codeAuthFailure, codeMissingAuthenticationToken:
		return http.StatusUnauthorized
	case codeUnauthorizedOperation, codeSignatureDoesNotMatch, codeIncompleteSignature:
		return http.StatusForbidden
	case codeDryRunOperation:
		return http.StatusPreconditionFailed
	case codeInternalError:
		return http.StatusInternalServerError
	case codeUnavailable, codeRequestLimitExceeded:
		return http.StatusServiceUnavailable
	}
	return http.StatusBadRequest
}

// renamed are kiln's API codes that EC2 spells otherwise, by resource kind where it
// matters.
var renamed = map[string]string{
	api.CodeServiceUnavailable:    codeUnavailable,
	api.CodeInvalidRequest:        codeInvalidParameterValue,
	api.CodeUnknownParameter:      codeUnknownParameter,
	api.CodeRequestTooLarge:       codeInvalidParameterValue,
	api.CodeQuotaExceeded:         "InstanceLimitExceeded",
	api.CodeResourceLimitExceeded: "ResourceLimitExceeded",
	api.CodeRegistryDataInvalid:   codeInternalError,
	api.CodeInvalidVolumeNotFound: "InvalidVolume.NotFound",
	api.CodeResourceNotFound:      "InvalidID",
}

// fromAPI turns an error of kiln's API (or any error) into EC2's; onInstance says the
// call acts on instances, where EC2 says IncorrectInstanceState.
func fromAPI(err error, onInstance bool) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	ae := api.FromError(err, api.KindNone)
	code := ae.Code
	if c, ok := renamed[code]; ok {
		code = c
	}
	if code == api.CodeIncorrectState && onInstance {
		code = codeIncorrectInstanceState
	}
	if code == api.CodeInvalidAction {
		code = codeInternalError // an internal call kiln's API does not know: kiln's fault
	}
	return &Error{Code: code, Message: ae.Message}
}

// writeError answers with EC2's error document.
func writeError(w http.ResponseWriter, e *Error, requestID string) {
	type xmlError struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	doc := struct {
		XMLName   xml.Name   `xml:"Response"`
		Errors    []xmlError `xml:"Errors>Error"`
		RequestID string     `xml:"RequestID"`
	}{Errors: []xmlError{{e.Code, e.Message}}, RequestID: requestID}
	writeXML(w, e.status(), doc)
}

// writeXML answers with v as an XML document.
func writeXML(w http.ResponseWriter, status int, v any) {
	b, err := xml.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte("<Response><Errors><Error><Code>InternalError</Code><Message>encoding the answer failed</Message></Error></Errors></Response>")
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(status)
	w.Write([]byte(xml.Header))
	w.Write(b)
}

// clip shortens what a caller sent before it goes into a message.
func clip(s string) string { return ids.Clip(s) }

// notFound is the error for ids that do not exist (or the caller may not see).
func notFound(code, what string, missing []string) *Error {
	return errorf(code, "The %s '%s' does not exist", what, strings.Join(missing, ", "))
}
