package api

import "runtime/debug"

// Version and GitCommit identify a build of the daemon and calicoctl. They
// are set at link time:
//
//	go build -ldflags "-X github.com/calico-libnetwork/calico-libnetwork/api.Version=v0.2.0 -X github.com/calico-libnetwork/calico-libnetwork/api.GitCommit=$(git rev-parse --short HEAD)"
var (
	Version   = "v0.1.0-dev"
	GitCommit = ""
)

// BuildCommit returns GitCommit, or the VCS revision Go stamped into the
// binary, or "unknown".
func BuildCommit() string {
	if GitCommit != "" {
		return GitCommit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 9 {
				return s.Value[:9]
			}
		}
	}
	return "unknown"
}
