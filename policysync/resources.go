package policysync

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
)

// LastGoodFile, in the data dir, holds the last good versions of invalid
// policy resources.
const LastGoodFile = "policy-last-good.json"

// resources makes policy fail safe one resource at a time. A policy record
// that does not decode or validate is not enforced as stored: its last good
// version stays in force (or, with none, it is left out, which opens nothing
// the other resources close and blocks no endpoint it does not select).
// Each problem is logged once, with the resource's name. The last good
// versions of invalid records are kept in a file in the data dir, so a
// restarted daemon goes on enforcing them.
type resources struct {
	log  *slog.Logger
	path string // "" keeps nothing on disk

	mu      sync.Mutex
	good    map[string][]byte // key -> the record as last seen valid
	invalid map[string]string // key -> why the current record is not enforced
	saved   map[string][]byte // key -> last good version of an invalid record, as on disk
	records map[string]string // endpoint/network key -> why it is undecodable (logged once)
}

func newResources(log *slog.Logger, path string) *resources {
	r := &resources{log: log, path: path, good: map[string][]byte{}, invalid: map[string]string{},
		saved: map[string][]byte{}, records: map[string]string{}}
	if path == "" {
		return r
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		log.Warn("cannot read the last good versions of invalid policy resources", "file", path, "err", err)
	default:
		saved := map[string]json.RawMessage{}
		if err := json.Unmarshal(b, &saved); err != nil {
			log.Warn("the file of last good policy versions is unreadable; ignoring it", "file", path, "err", err)
			break
		}
		for k, v := range saved {
			r.saved[k] = v
		}
	}
	return r
}

// decodeInForce decodes the record at key; when it is invalid it returns
// the last good version instead, and false when there is none.
func decodeInForce[T any](r *resources, key, kind, name string, raw []byte, decode func(string, []byte) (T, error)) (T, bool) {
	v, err := decode(name, raw)
	if err == nil {
		r.valid(key, kind, name, raw)
		return v, true
	}
	good := r.invalidRecord(key, kind, name, err)
	if good != nil {
		if v, err := decode(name, good); err == nil {
			return v, true
		}
	}
	var zero T
	return zero, false
}

func (r *resources) valid(key, kind, name string, raw []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.good[key] = append([]byte(nil), raw...)
	if _, was := r.invalid[key]; was {
		delete(r.invalid, key)
		r.log.Info("policy resource is valid again and enforced as stored", "resource", kind+" "+name)
	}
	if _, ok := r.saved[key]; ok {
		delete(r.saved, key)
		r.saveLocked()
	}
}

// invalidRecord notes that the record at key is invalid and returns its
// last good version (nil when there is none).
func (r *resources) invalidRecord(key, kind, name string, err error) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	good := r.good[key]
	if good == nil {
		good = r.saved[key]
	}
	why := err.Error()
	if r.invalid[key] != why {
		inForce := "its last good version"
		if good == nil {
			inForce = "nothing: it has no earlier good version"
		}
		r.log.Warn("policy resource is invalid and is not enforced as stored (fix it with calicoctl apply, or delete it)",
			"resource", kind+" "+name, "key", key, "err", why, "inForce", inForce)
		r.invalid[key] = why
	}
	if good != nil && string(r.saved[key]) != string(good) {
		r.saved[key] = good
		r.saveLocked()
	}
	return good
}

// noteRecord logs an undecodable endpoint or network record once.
func (r *resources) noteRecord(key, what string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		delete(r.records, key)
		return
	}
	if r.records[key] != err.Error() {
		r.log.Warn(what+" is undecodable and ignored", "key", key, "err", err)
		r.records[key] = err.Error()
	}
}

// forget drops what is known of a deleted record.
func (r *resources) forget(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.good, key)
	delete(r.invalid, key)
	delete(r.records, key)
	if _, ok := r.saved[key]; ok {
		delete(r.saved, key)
		r.saveLocked()
	}
}

// retain forgets every record not in present (after a new snapshot).
func (r *resources) retain(present map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := false
	for _, m := range []map[string][]byte{r.good, r.saved} {
		for k := range m {
			if !present[k] {
				if _, ok := r.saved[k]; ok {
					changed = true
				}
				delete(m, k)
			}
		}
	}
	for _, m := range []map[string]string{r.invalid, r.records} {
		for k := range m {
			if !present[k] {
				delete(m, k)
			}
		}
	}
	if changed {
		r.saveLocked()
	}
}

// Invalid lists the policy records not enforced as stored, with why.
func (r *resources) Invalid() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]string, len(r.invalid))
	for k, v := range r.invalid {
		out[k] = v
	}
	return out
}

func (r *resources) saveLocked() {
	if r.path == "" {
		return
	}
	keys := make([]string, 0, len(r.saved))
	for k := range r.saved {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	m := make(map[string]json.RawMessage, len(keys))
	for _, k := range keys {
		m[k] = r.saved[k]
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err == nil {
		err = writeFileAtomic(r.path, b)
	}
	if err != nil {
		r.log.Warn("cannot keep the last good versions of invalid policy resources on disk; a restart would forget them", "file", r.path, "err", err)
	}
}

func writeFileAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".policy-last-good-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}
