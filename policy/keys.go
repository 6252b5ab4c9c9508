package policy

import "github.com/calico-libnetwork/calico-libnetwork/api"

// UsesLabelsOtherThan reports whether a selector of m (a policy's, or one
// in a rule of a policy or profile) looks at a label key not in known: then
// an endpoint's policy depends on labels that may not be known yet.
// Unparsable selectors count as looking at anything.
func (m *Model) UsesLabelsOtherThan(known ...string) bool {
	isKnown := map[string]bool{}
	for _, k := range known {
		isKnown[k] = true
	}
	uses := func(s string) bool {
		if s == "" {
			return false
		}
		sel, err := api.ParseSelector(s)
		if err != nil {
			return true
		}
		for _, k := range api.SelectorKeys(sel) {
			if !isKnown[k] {
				return true
			}
		}
		return false
	}
	rules := func(rs []api.Rule) bool {
		for _, r := range rs {
			for _, e := range []api.EntityRule{r.Source, r.Destination} {
				if uses(e.Selector) || uses(e.NotSelector) {
					return true
				}
			}
		}
		return false
	}
	spec := func(s *api.PolicySpec) bool { return uses(s.Selector) || rules(s.Ingress) || rules(s.Egress) }
	for i := range m.NetworkPolicies {
		if spec(&m.NetworkPolicies[i].PolicySpec) {
			return true
		}
	}
	for i := range m.GlobalNetworkPolicies {
		if spec(&m.GlobalNetworkPolicies[i].PolicySpec) {
			return true
		}
	}
	for i := range m.Profiles {
		if rules(m.Profiles[i].Ingress) || rules(m.Profiles[i].Egress) {
			return true
		}
	}
	return false
}
