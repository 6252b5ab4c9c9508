package ctl

import (
	"strings"

	"github.com/calico-libnetwork/calico-libnetwork/api"
)

// felixConfigStore is the FelixConfiguration named default: the host
// protection settings, one record at api.FelixConfigKey (absent: the
// defaults).
var felixConfigStore = singletonStore[api.FelixConfig, *api.FelixConfig]{
	kind: api.FelixConfigKind, name: api.FelixConfigName, key: api.FelixConfigKey,
	what:     "the host protection settings are the FelixConfiguration named default",
	defaults: api.DefaultFelixConfig,
	columns:  []string{"NAME", "DEFAULTENDPOINTTOHOSTACTION", "ENDPOINTTOHOSTALLOWEDPORTS"},
	cells: func(c *api.FelixConfig) []string {
		ports := make([]string, len(c.EndpointToHostAllowedPorts))
		for i, p := range c.EndpointToHostAllowedPorts {
			ports[i] = p.String()
		}
		return []string{string(c.DefaultEndpointToHostAction), strings.Join(ports, ",")}
	},
}
