package dataplane

import (
	"fmt"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
)

// AllEndpointLinks names the links carrying our alias, of any node.
func AllEndpointLinks() ([]string, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []string
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Alias, AliasPrefix) {
			out = append(out, l.Attrs().Name)
		}
	}
	return out, nil
}
