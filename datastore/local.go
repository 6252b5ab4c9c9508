package datastore

// Where a daemon's embedded etcd (package datastore/embedded) can be
// found: its socket and the record of it in the data dir. Reading them
// needs no etcd server code, so calicoctl finds the local datastore
// without linking one.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// EndpointFile, inside the data dir, records the embedded etcd's client URL so
// that calicoctl and a restarted daemon find it without flags.
const EndpointFile = "etcd-endpoint"

// SocketFile, inside the data dir, is the embedded etcd's only listener: a
// unix socket only root may open (see embedded.Start).
const SocketFile = "etcd.sock"

// EmbeddedEndpoint returns the recorded client URL of the embedded etcd in
// dataDir, or "" when no daemon recorded one.
func EmbeddedEndpoint(dataDir string) string {
	ep, _ := ReadEmbeddedEndpoint(dataDir)
	return ep
}

// ErrRootOnly is returned when the embedded datastore's record cannot be
// read for lack of permission: it is root's alone.
var ErrRootOnly = errors.New("permission denied")

// ReadEmbeddedEndpoint returns the recorded client URL of the embedded etcd
// in dataDir: "" with no error when none is recorded, an error wrapping
// ErrRootOnly when the caller may not read it (it is not root).
func ReadEmbeddedEndpoint(dataDir string) (string, error) {
	path := filepath.Join(dataDir, EndpointFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrPermission):
		return "", fmt.Errorf("%w reading %s: %w", ErrRootOnly, path, err)
	case errors.Is(err, os.ErrNotExist):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	return strings.TrimSpace(string(b)), nil
}

func quietZap() *zap.Logger {
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(zapcore.ErrorLevel)
	l, err := cfg.Build()
	if err != nil {
		return zap.NewNop()
	}
	return l
}
