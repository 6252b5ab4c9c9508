// Package ctl is the command-line tool that manages IP pools, nodes
// and IPAM in the datastore the daemons share, in the manner of Calico's
// calicoctl. cmd/calicoctl only calls Main.
package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/calico-libnetwork/calico-libnetwork/datastore"
)

// Env is what the commands use of the outside world; tests replace it.
type Env struct {
	Stdin             io.Reader
	Stdout, Stderr    io.Writer
	Getenv            func(string) string
	Now               func() time.Time
	Hostname          func() (string, error)
	DefaultConfigFile string
	DefaultDataDir    string
	DefaultPluginDir  string
}

// OSEnv is the real environment.
func OSEnv() *Env {
	return &Env{
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		Getenv: os.Getenv, Now: time.Now, Hostname: os.Hostname,
		DefaultConfigFile: DefaultConfigFile, DefaultDataDir: DefaultDataDir, DefaultPluginDir: DefaultPluginDir,
	}
}

// app holds the global flags and the datastore connection of one run.
type app struct {
	env        *Env
	configFile string
	dataDir    string
	// nodeNameFlag is node status's --nodename.
	nodeNameFlag string
	store        *datastore.Store
	ds           dsConfig
}

// usageError marks mistakes in the command line, as opposed to failures.
type usageError struct {
	msg string
	cmd string
}

func (e *usageError) Error() string {
	return fmt.Sprintf("%s (see '%s --help')", e.msg, e.cmd)
}

func usageErrorf(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...), cmd: cmd.CommandPath()}
}

// Main runs calicoctl with args and returns the exit status. Errors are
// printed as one line on stderr.
func Main(ctx context.Context, args []string, env *Env) int {
	a := &app{env: env}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	err := root.ExecuteContext(ctx)
	if a.store != nil {
		a.store.Close()
	}
	if err != nil {
		var ue *usageError
		if !errors.As(err, &ue) && isCobraUsageError(err) {
			cmd, _, ferr := root.Find(args)
			path := root.CommandPath()
			if ferr == nil && cmd != nil {
				path = cmd.CommandPath()
			}
			err = &usageError{msg: err.Error(), cmd: path}
		}
		var se *silentError
		if !errors.As(err, &se) {
			fmt.Fprintln(env.Stderr, oneLine(err.Error()))
		}
		return 1
	}
	return 0
}

// silentError sets the exit status after the command printed its own report.
type silentError struct{}

func (*silentError) Error() string { return "" }

var cobraUsageRE = regexp.MustCompile(`^(unknown (command|flag|shorthand flag)|flag needs an argument|invalid argument|accepts |requires |bad flag|if any flags in the group)`)

func isCobraUsageError(err error) bool { return cobraUsageRE.MatchString(err.Error()) }

var spaceRE = regexp.MustCompile(`\s+`)

// oneLine flattens an error message (cobra's suggestions come on several
// lines) into one.
func oneLine(s string) string {
	return strings.TrimSpace(spaceRE.ReplaceAllString(s, " "))
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "calicoctl",
		Short: "Manage IP pools, nodes, IPAM and network policy of calico-libnetwork",
		Long: `calicoctl manages the IP pools, nodes, IPAM data, profiles and network
policies that calico-libnetwork daemons share through etcd, in the manner of
Calico's calicoctl.

The datastore is found from --config (default /etc/calico/calicoctl.cfg, used
when it exists), else the ETCD_ENDPOINTS, ETCD_CA_CERT_FILE, ETCD_CERT_FILE and
ETCD_KEY_FILE environment variables, else the embedded etcd of the daemon on
this host (recorded in --data-dir).`,
		SilenceUsage:      true,
		SilenceErrors:     true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.PersistentFlags().StringVarP(&a.configFile, "config", "c", "", "calicoctl config file (default "+a.env.DefaultConfigFile+" when it exists)")
	dataDir := a.env.DefaultDataDir
	if d := a.env.Getenv("CALICO_DATA_DIR"); d != "" {
		dataDir = d
	}
	root.PersistentFlags().StringVar(&a.dataDir, "data-dir", dataDir, "the local daemon's data dir, where its embedded etcd's address is recorded (env CALICO_DATA_DIR)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageErrorf(c, "%v", err) })
	root.AddCommand(
		a.putCommand("create", "Create resources from a file", ipamPutCreate),
		a.putCommand("apply", "Create or update resources from a file", ipamPutApply),
		a.putCommand("replace", "Update existing resources from a file", ipamPutReplace),
		a.deleteCommand(),
		a.getCommand(),
		a.ipamCommand(),
		a.nodeCommand(),
		a.versionCommand(),
	)
	return root
}
