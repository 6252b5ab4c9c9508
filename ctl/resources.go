package ctl

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/datastore"
	"github.com/calico-libnetwork/calico-libnetwork/ipam"
)

const (
	ipamPutCreate  = ipam.PutCreate
	ipamPutApply   = ipam.PutApply
	ipamPutReplace = ipam.PutReplace
)

var pastTense = map[string]string{"create": "created", "apply": "applied", "replace": "replaced", "delete": "deleted"}

// readResources decodes the documents in file ("-" for stdin).
func (a *app) readResources(file string) ([]api.Object, error) {
	var data []byte
	var err error
	source := file
	if file == "-" {
		source = "stdin"
		data, err = io.ReadAll(a.env.Stdin)
	} else {
		data, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", source, err)
	}
	return api.Decode(data, source)
}

// countWord describes n resources as calicoctl does: "2 'IPPool' resource(s)"
// when they are of one kind, "3 resource(s)" otherwise.
func countWord(objs []api.Object, n int) string {
	kinds := map[string]bool{}
	for _, o := range objs {
		kinds[o.Resource.ResourceKind().Name] = true
	}
	if len(kinds) == 1 {
		for k := range kinds {
			return fmt.Sprintf("%d '%s' resource(s)", n, k)
		}
	}
	return fmt.Sprintf("%d resource(s)", n)
}

func (a *app) putCommand(verb, short string, mode ipam.PutMode) *cobra.Command {
	var file string
	var skipExists bool
	long := map[string]string{
		"create":  "Create the resources in FILE (YAML or JSON; - for stdin). A resource that exists already is an error: use apply to update it.",
		"apply":   "Create the resources in FILE (YAML or JSON; - for stdin), or update them where they exist.",
		"replace": "Update the resources in FILE (YAML or JSON; - for stdin), which must exist.",
	}[verb]
	cmd := &cobra.Command{
		Use:     verb + " -f FILE",
		Short:   short,
		Long:    long + "\n\nKinds: " + api.KindList() + ". Both the current form (apiVersion projectcalico.org/v3) and the legacy one (apiVersion v1, kind ipPool, node, profile or policy) are read.",
		Example: fmt.Sprintf("  calicoctl %s -f new-pool.yaml\n  cat pools.yaml | calicoctl %s -f -", verb, verb),
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return usageErrorf(cmd, "give the resources to %s with -f FILE (or -f - for stdin)", verb)
			}
			objs, err := a.readResources(file)
			if err != nil {
				return err
			}
			s, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			done, skipped := 0, 0
			for _, o := range objs {
				_, err := storeFor(o.Resource.ResourceKind()).put(cmd.Context(), s, o, mode)
				if err != nil && skipExists && errors.Is(err, api.ErrExists) {
					skipped++
					continue
				}
				if err != nil {
					if done+skipped > 0 {
						fmt.Fprintf(a.env.Stdout, "Partial success: %s the first %d out of %s\n", pastTense[verb], done+skipped, countWord(objs, len(objs)))
					}
					if len(objs) > 1 {
						return fmt.Errorf("%s: %w", o.Where, err)
					}
					return err
				}
				done++
			}
			msg := fmt.Sprintf("Successfully %s %s", pastTense[verb], countWord(objs, done))
			if skipped > 0 {
				msg += fmt.Sprintf(" (%d already existed, skipped)", skipped)
			}
			fmt.Fprintln(a.env.Stdout, msg)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "file of resources, YAML or JSON (- for stdin)")
	if verb == "create" {
		cmd.Flags().BoolVar(&skipExists, "skip-exists", false, "skip resources that exist already instead of failing")
	}
	return cmd
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf(cmd, "unexpected argument %q: give the resources with -f FILE", args[0])
	}
	return nil
}

func (a *app) deleteCommand() *cobra.Command {
	var file string
	var force, skipNotExists bool
	cmd := &cobra.Command{
		Use:   "delete (-f FILE | KIND NAME...)",
		Short: "Delete resources",
		Long: `Delete the resources in FILE, or the ones of KIND named NAME. An IP pool may be
named by its CIDR. A pool whose addresses are still in use is not deleted:
disable it, remove its containers, then delete it, or pass --force.`,
		Example: "  calicoctl delete ipPool 192.168.0.0/16\n  calicoctl delete ippool new-pool-1\n  calicoctl delete -f new-pool.yaml",
		RunE: func(cmd *cobra.Command, args []string) error {
			var objs []api.Object
			switch {
			case file != "" && len(args) > 0:
				return usageErrorf(cmd, "give either -f FILE or KIND NAME, not both")
			case file != "":
				var err error
				if objs, err = a.readResources(file); err != nil {
					return err
				}
			case len(args) == 0:
				return usageErrorf(cmd, "give what to delete: KIND NAME (e.g. ippool default-ipv4-ippool) or -f FILE")
			default:
				k, err := api.LookupKind(args[0])
				if err != nil {
					return err
				}
				if len(args) < 2 {
					return usageErrorf(cmd, "give the name of the %s to delete", k.Name)
				}
				for _, n := range args[1:] {
					objs = append(objs, nameOnly(k, n))
				}
			}
			s, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			done, skipped := 0, 0
			for _, o := range objs {
				warn, err := storeFor(o.Resource.ResourceKind()).del(cmd.Context(), s, o, force)
				if err != nil && skipNotExists && errors.Is(err, datastore.ErrNotFound) {
					skipped++
					continue
				}
				if err != nil {
					if done > 0 {
						fmt.Fprintf(a.env.Stdout, "Partial success: deleted the first %d out of %s\n", done, countWord(objs, len(objs)))
					}
					return err
				}
				if warn != "" {
					fmt.Fprintln(a.env.Stderr, "Warning: "+warn)
				}
				done++
			}
			msg := "Successfully deleted " + countWord(objs, done)
			if skipped > 0 {
				msg += fmt.Sprintf(" (%d did not exist, skipped)", skipped)
			}
			fmt.Fprintln(a.env.Stdout, msg)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "file of resources to delete, YAML or JSON (- for stdin)")
	cmd.Flags().BoolVar(&force, "force", false, "delete an IP pool even though addresses in it are in use")
	cmd.Flags().BoolVar(&skipNotExists, "skip-not-exists", false, "skip resources that do not exist instead of failing")
	return cmd
}

// nameOnly is an object of kind k that carries just its name (a pool may be
// named by its CIDR).
func nameOnly(k *api.Kind, name string) api.Object {
	switch k {
	case api.IPPoolKind:
		p := &api.IPPool{Name: name}
		if strings.Contains(name, "/") {
			p = &api.IPPool{CIDR: name}
		}
		return api.Object{Resource: p}
	case api.NodeKind:
		return api.Object{Resource: &api.Node{Name: name}}
	}
	if n, ok := storeFor(k).(interface{ nameOnly(string) api.Object }); ok {
		return n.nameOnly(name)
	}
	panic("calicoctl: nameOnly: kind " + k.Name)
}

func (a *app) getCommand() *cobra.Command {
	var file, output string
	cmd := &cobra.Command{
		Use:   "get KIND [NAME...]",
		Short: "Show resources",
		Long: `Show resources of KIND (ipPool, node, ipamConfig, profile, networkPolicy,
globalNetworkPolicy, felixConfiguration; any case, singular or plural), all of them or the ones
named. An IP pool may be named by its CIDR. Profiles are the stored ones: a
network without one of its name has its default profile, not listed.

Output (-o): ps (default, a table), wide (more columns), yaml, json.`,
		Example: "  calicoctl get ipPool -o wide\n  calicoctl get ippool default-ipv4-ippool -o yaml\n  calicoctl get nodes",
		RunE: func(cmd *cobra.Command, args []string) error {
			switch output {
			case "ps", "wide", "yaml", "json":
			default:
				return usageErrorf(cmd, "-o %s is not a known output format: use ps, wide, yaml or json", output)
			}
			var kind *api.Kind
			var names []string
			single := false
			switch {
			case file != "" && len(args) > 0:
				return usageErrorf(cmd, "give either -f FILE or KIND [NAME...], not both")
			case file != "":
				objs, err := a.readResources(file)
				if err != nil {
					return err
				}
				for _, o := range objs {
					k := o.Resource.ResourceKind()
					if kind != nil && kind != k {
						return usageErrorf(cmd, "%s holds more than one kind of resource: get one kind at a time", file)
					}
					kind = k
					n := o.Resource.ResourceName()
					if p, ok := o.Resource.(*api.IPPool); ok && o.NameFromCIDR {
						n = p.CIDR
					}
					names = append(names, n)
				}
				single = len(objs) == 1
			case len(args) == 0:
				return usageErrorf(cmd, "give a resource kind: %s (e.g. calicoctl get ippools)", api.KindList())
			default:
				k, err := api.LookupKind(args[0])
				if err != nil {
					return err
				}
				kind, names = k, args[1:]
				single = len(names) == 1
			}
			s, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			ks := storeFor(kind)
			var objs []api.Object
			if len(names) == 0 {
				if objs, err = ks.list(cmd.Context(), s); err != nil {
					return err
				}
			}
			for _, n := range names {
				o, err := ks.get(cmd.Context(), s, n)
				if err != nil {
					return err
				}
				objs = append(objs, o)
			}
			a.warnInvalid(objs)
			switch output {
			case "yaml", "json":
				b, err := api.Encode(objs, kind, !single, output)
				if err != nil {
					return err
				}
				_, err = a.env.Stdout.Write(b)
				return err
			}
			wide := output == "wide"
			rows := make([][]string, 0, len(objs))
			now := a.env.Now()
			for _, o := range objs {
				rows = append(rows, ks.row(o, wide, now))
			}
			hdr, rows := statusColumn(ks.header(wide), rows, objs)
			return writeColumns(a.env.Stdout, hdr, rows)
		},
	}
	cmd.Flags().StringVarP(&file, "filename", "f", "", "get the resources named in this file")
	cmd.Flags().StringVarP(&output, "output", "o", "ps", "output format: ps, wide, yaml or json")
	return cmd
}
