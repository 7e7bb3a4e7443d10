package s3sync

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Kind says what went wrong with a transfer.
type Kind int

const (
	Other         Kind = iota
	AccessDenied       // the credentials were refused or lack a permission
	NoCredentials      // the default chain found no credentials
	NoSuchBucket       // the bucket does not exist
	NotFound           // nothing under the prefix, or no such object
	WrongRegion        // the bucket lives in another region
	Unreachable        // the endpoint could not be reached
	CutOff             // a transfer ended before all of its bytes came
	Corrupt            // the bytes do not match the object's checksum, size or ETag
	Changed            // the object changed while it was being read
	Canceled           // the context was cancelled (a stop)
	BadKey             // an object key that cannot be a local file name
)

// Error is a failed S3 operation on one URL, as one sentence.
type Error struct {
	URL    string // s3://bucket/key the operation was about
	Kind   Kind
	Detail string // what happened, in words; may be empty
	Err    error  // the underlying error, if any

	hide  bool // Err is summed up by Detail; leave it out of the message
	tries int  // attempts made, when more than one
}

func (e *Error) Error() string {
	var msg string
	switch e.Kind {
	case AccessDenied:
		msg = "access denied: check AWS credentials" + paren(e.Detail)
	case NoCredentials:
		msg = "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
	case NoSuchBucket:
		msg = "bucket " + quote(bucketOf(e.URL)) + " does not exist"
	case WrongRegion:
		msg = "the bucket is in another region: " + e.Detail
	case Changed:
		msg = "the object changed while it was being downloaded; run again"
	case Canceled:
		msg = "stopped before the transfer finished"
	case NotFound:
		msg = cmp.Or(e.Detail, "not found")
	default:
		msg = map[Kind]string{
			Unreachable: "cannot reach the S3 endpoint",
			CutOff:      "transfer cut off",
			Corrupt:     "downloaded bytes do not match the object",
			BadKey:      "object key cannot be stored as a local file",
		}[e.Kind]
		if e.Detail != "" {
			if msg != "" {
				msg += " "
			}
			msg += e.Detail
		}
		if e.tries > 1 {
			msg += fmt.Sprintf(" (tried %d times)", e.tries)
		}
		if e.Err != nil && !e.hide {
			if msg != "" {
				msg += ": "
			}
			msg += e.Err.Error()
		}
	}
	return e.URL + ": " + msg
}

func paren(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

func (e *Error) Unwrap() error { return e.Err }

// IsKind reports whether err is (or wraps) an [*Error] of kind k.
func IsKind(err error, k Kind) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == k
}

func quote(s string) string { return `"` + s + `"` }

func bucketOf(url string) string {
	b, _, _ := strings.Cut(strings.TrimPrefix(url, Scheme), "/")
	return b
}

// classify turns an error from the SDK into an [*Error] about url.
func classify(url string, err error) error {
	if err == nil {
		return nil
	}
	var se *Error
	if errors.As(err, &se) {
		return err
	}
	e := &Error{URL: url, Err: err}
	var ae smithy.APIError
	var re *smithyhttp.ResponseError
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		e.Kind = Canceled
	case errors.As(err, &ae):
		code := ae.ErrorCode()
		detail := code
		if m := ae.ErrorMessage(); m != "" && m != code {
			detail += ": " + strings.TrimSuffix(m, ".")
		}
		switch code {
		case "NoSuchBucket":
			e.Kind = NoSuchBucket
		case "NoSuchKey", "NotFound":
			e.Kind, e.hide = NotFound, true
		case "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
			"InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "InvalidClientTokenId":
			e.Kind, e.Detail = AccessDenied, detail
		case "PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException", "MovedPermanently":
			e.Kind, e.Detail = WrongRegion, regionHint(re, err)
		case "PreconditionFailed":
			e.Kind = Changed
		default:
			if errors.As(err, &re) {
				switch re.HTTPStatusCode() {
				case http.StatusForbidden:
					e.Kind, e.Detail = AccessDenied, detail
					return e
				case http.StatusMovedPermanently:
					e.Kind, e.Detail = WrongRegion, regionHint(re, err)
					return e
				}
			}
			e.Detail, e.hide = "S3 error "+detail, true
		}
	case errors.Is(err, os.ErrDeadlineExceeded): // stallConn's: nothing moved for its stall timeout
		e.Kind, e.Detail = Unreachable, "(it stopped answering)"
	case errors.As(err, &oe) && oe.Op == "dial":
		e.Kind, e.Detail = Unreachable, "at "+oe.Addr.String()
		e.Err = oe.Err
	case strings.Contains(err.Error(), "failed to refresh cached credentials") ||
		strings.Contains(err.Error(), "failed to retrieve credentials") ||
		strings.Contains(err.Error(), "no valid providers in chain"):
		e.Kind = NoCredentials
	case errors.As(err, &ne):
		e.Kind = Unreachable
	}
	return e
}

// regionHint names the bucket's region when S3 said which it is.
func regionHint(re *smithyhttp.ResponseError, err error) string {
	if re == nil {
		errors.As(err, &re)
	}
	if re != nil && re.Response != nil {
		if r := re.Response.Header.Get("X-Amz-Bucket-Region"); r != "" {
			return "set AWS_REGION=" + r
		}
	}
	return "set AWS_REGION to the bucket's region"
}
