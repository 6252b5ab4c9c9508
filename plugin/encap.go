package plugin

import (
	"github.com/calico-libnetwork/calico-libnetwork/api"
	"github.com/calico-libnetwork/calico-libnetwork/dataplane/carrier"
)

// kernelEncapsulations probes which encapsulations this kernel can create,
// for the Node record: other nodes carry an IPIP pool by VXLAN to a node
// without ipip. Never nil (an empty list says "neither").
func kernelEncapsulations() []string {
	out := []string{}
	for _, k := range []string{api.EncapsulationVXLAN, api.EncapsulationIPIP} {
		if carrier.KernelHasLinkKind(k) {
			out = append(out, k)
		}
	}
	return out
}
