// Package plugin_e2e is the managed plugin's end-to-end test: the path a
// user takes from `docker plugin install` to a working calico network, on a
// real engine and a real registry.
//
// It never touches the host's Docker engine: scripts/plugin-sandbox.sh runs
// a private dockerd (own data root, containerd, /run, /var/lib and network
// namespace, FORWARD policy DROP) and Debian's docker-registry on
// 127.0.0.1:5000 inside that namespace. The test then
//
//  1. builds the image and the plugin (make image plugin-push REGISTRY=127.0.0.1:5000)
//     and checks the version stamped into both;
//  2. installs the plugin from the registry as the README says
//     (docker plugin install --grant-all-permissions --alias calico-libnetwork ...);
//  3. creates a network with the usual names (--driver calico --ipam-driver
//     calico-ipam) and one with the plugin's own name, runs containers with
//     --restart=always and pings between them;
//  4. checks that `docker plugin disable` is refused while a network uses the plugin;
//  5. restarts dockerd and checks that the containers come back, ping again,
//     and that the engine logged no "endpoint already exists";
//  6. removes everything; the sandbox's teardown kills whatever is left.
//
// Run it as root with
//
//	go test -tags e2e -count=1 -v -timeout 30m ./e2e/plugin/     (or make e2e-plugin)
//
// Environment: CALICO_E2E_REQUIRED=1 makes a missing prerequisite a failure
// instead of a skip; CALICO_E2E_KEEP=1 keeps the sandbox's logs after a pass.
package plugin_e2e
