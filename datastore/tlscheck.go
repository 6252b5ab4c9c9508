package datastore

import (
	"fmt"
	"strings"
)

// CheckEndpointSchemes refuses a plain http:// endpoint when TLS files are
// given: the client would otherwise talk plaintext to it and the files would
// be silently ignored.
func CheckEndpointSchemes(endpoints []string, caFile, certFile, keyFile string) error {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil
	}
	for _, e := range endpoints {
		if rest, ok := cutPrefixFold(e, "http://"); ok {
			return fmt.Errorf("etcd endpoint %s is plain http:// but TLS files are given (--etcd-ca-cert-file, --etcd-cert-file, --etcd-key-file): use https://%s, or drop the TLS files", e, rest)
		}
	}
	return nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}
