package ctl

import (
	"fmt"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// warnInvalid tells, on stderr, of every stored record the daemons do not
// enforce as stored, and why.
func (a *app) warnInvalid(objs []api.Object) {
	for _, o := range objs {
		if o.Invalid == "" {
			continue
		}
		fmt.Fprintf(a.env.Stderr, "Warning: %s %q is invalid, the daemons do not enforce it as stored (they keep its last good version, if there was one): %s; fix it with calicoctl apply, or delete it\n",
			o.Resource.ResourceKind().Name, o.Resource.ResourceName(), o.Invalid)
	}
}

// statusColumn adds a STATUS column to a table when some of its records
// are invalid.
func statusColumn(header []string, rows [][]string, objs []api.Object) ([]string, [][]string) {
	any := false
	for _, o := range objs {
		any = any || o.Invalid != ""
	}
	if !any {
		return header, rows
	}
	out := make([][]string, len(rows))
	for i, r := range rows {
		st := "Valid"
		if objs[i].Invalid != "" {
			st = "Invalid: " + objs[i].Invalid
		}
		out[i] = append(append([]string(nil), r...), st)
	}
	return append(append([]string(nil), header...), "STATUS"), out
}
