package api

import "slices"

// The encapsulations a node's kernel may have, as recorded in
// Node.Encapsulations (the same names as the data plane's carrier modes).
const (
	EncapsulationVXLAN = "vxlan"
	EncapsulationIPIP  = "ipip"
)

// HasEncapsulation reports whether the node's kernel can carry enc. A record
// without the list was written by a daemon older than it: those always
// carried VXLAN and never IPIP, so that is what such a node is taken to have.
func (n Node) HasEncapsulation(enc string) bool {
	if n.Encapsulations == nil {
		return enc == EncapsulationVXLAN
	}
	return slices.Contains(n.Encapsulations, enc)
}
