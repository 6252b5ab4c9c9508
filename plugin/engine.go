package plugin

import (
	"context"
	"encoding/json"
	"strings"

	"github.com/calico-libnetwork/calico-libnetwork/docker/engineapi"
	"github.com/calico-libnetwork/calico-libnetwork/docker/netdriver"
)

// engine tells the garbage collector and endpoint repair which calico
// networks and endpoints this host's Docker engine has.
type engine struct {
	dc      *engineapi.Client
	drivers []string // the network driver's names as the engine reports them
}

func newEngine(dc *engineapi.Client, driverNames string) engine {
	var names []string
	for _, n := range strings.Split(driverNames, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	return engine{dc: dc, drivers: names}
}

func (e engine) CalicoNetworks(ctx context.Context) ([]netdriver.EngineNetwork, error) {
	var list []engineapi.Network
	for _, d := range e.drivers {
		ns, err := e.dc.Networks(ctx, d)
		if err != nil {
			return nil, err
		}
		list = append(list, ns...)
	}
	var out []netdriver.EngineNetwork
	for _, n := range list {
		full, err := e.dc.Network(ctx, n.ID)
		if engineapi.IsNotFound(err) {
			continue // removed since the list
		}
		if err != nil {
			return nil, err
		}
		en := netdriver.EngineNetwork{ID: full.ID, Name: full.Name, EnableIPv6: full.EnableIPv6, Options: full.Options}
		for _, c := range full.IPAM.Config {
			en.Subnets = append(en.Subnets, c.Subnet)
		}
		for cid, raw := range full.Containers {
			var c struct {
				EndpointID string `json:"EndpointID"`
				MacAddress string `json:"MacAddress"`
			}
			if json.Unmarshal(raw, &c) == nil && c.EndpointID != "" {
				en.Endpoints = append(en.Endpoints, netdriver.EngineEndpoint{ID: c.EndpointID, ContainerID: cid, MAC: c.MacAddress})
			}
		}
		out = append(out, en)
	}
	return out, nil
}
