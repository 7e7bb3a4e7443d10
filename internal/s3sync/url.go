package s3sync

import (
	"fmt"
	"path"
	"strings"
)

// Scheme is the prefix of the URLs this package takes.
const Scheme = "s3://"

// URL is an S3 location: a bucket and a key, or a key prefix.
type URL struct {
	Bucket string
	Key    string // no leading slash; empty for the whole bucket
}

// IsURL reports whether s is an s3:// URL (and not a local path).
func IsURL(s string) bool { return strings.HasPrefix(s, Scheme) }

// Parse reads s3://bucket/key. The key may be empty (the whole bucket) and
// is kept as written, trailing slash included.
func Parse(s string) (URL, error) {
	rest, ok := strings.CutPrefix(s, Scheme)
	if !ok {
		return URL{}, fmt.Errorf("%q is not an s3:// URL", s)
	}
	bucket, key, _ := strings.Cut(rest, "/")
	if bucket == "" {
		return URL{}, fmt.Errorf("%q has no bucket name: want s3://bucket/prefix", s)
	}
	if strings.ContainsAny(bucket, " \t\n?#") || len(bucket) > 255 {
		return URL{}, fmt.Errorf("%q: %q is not a valid bucket name", s, bucket)
	}
	return URL{Bucket: bucket, Key: key}, nil
}

// String is the URL as s3://bucket/key.
func (u URL) String() string {
	if u.Key == "" {
		return Scheme + u.Bucket
	}
	return Scheme + u.Bucket + "/" + u.Key
}

// Join appends slash-separated elements to the key, as a folder.
func (u URL) Join(elem ...string) URL {
	k := strings.TrimSuffix(u.Key, "/")
	for _, e := range elem {
		e = strings.Trim(e, "/")
		if e == "" {
			continue
		}
		if k == "" {
			k = e
		} else {
			k += "/" + e
		}
	}
	return URL{Bucket: u.Bucket, Key: k}
}

// dirPrefix is the key prefix that lists the objects "in" u as a folder:
// the key with exactly one trailing slash, or "" for the whole bucket.
func (u URL) dirPrefix() string {
	k := strings.TrimRight(u.Key, "/")
	if k == "" {
		return ""
	}
	return k + "/"
}

// localName turns the part of a key below a prefix into a relative,
// slash-separated file name, refusing anything that could leave the
// destination folder or that no file can be called.
func localName(rel string) (string, error) {
	if rel == "" || strings.HasPrefix(rel, "/") || strings.Contains(rel, "\x00") || path.Clean(rel) != rel {
		return "", fmt.Errorf("cannot be stored as a local file")
	}
	for _, seg := range strings.Split(rel, "/") {
		if seg == ".." || seg == "." {
			return "", fmt.Errorf("cannot be stored as a local file")
		}
	}
	return rel, nil
}

// hasDotSegment reports whether any element of a slash-separated name
// starts with a dot (hidden files, and the runtime's .tmp- folders).
func hasDotSegment(rel string) bool {
	for _, seg := range strings.Split(rel, "/") {
		if strings.HasPrefix(seg, ".") {
			return true
		}
	}
	return false
}
