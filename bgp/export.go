package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	gobgpapi "github.com/osrg/gobgp/v4/api"
)

// exportPolicy is the name of the one export policy the speaker sets.
const exportPolicy = "calico-libnetwork-export"

// external says whether a peer is outside the cluster (a BGPPeer).
func external(ps PeerSpec) bool { return ps.Type == TypeGlobal || ps.Type == TypeNodeSpecific }

// applyExportLocked sets what each peer is sent. Cluster peers (mesh,
// reflectors) get everything. An external peer gets only this node's own
// routes, so a router learns each block from the node that holds it (and
// not, one hop longer, from a node that heard it over the mesh); with
// keepOriginalNextHop it gets every route, next hop unchanged.
func (s *Speaker) applyExportLocked(ctx context.Context, peers []PeerSpec) error {
	var ext, keep []string
	for _, ps := range peers {
		if !external(ps) {
			continue
		}
		host := netip.PrefixFrom(ps.Addr, ps.Addr.BitLen()).String()
		if ps.KeepOriginalNextHop {
			keep = append(keep, host)
		} else {
			ext = append(ext, host)
		}
	}
	key := strings.Join(ext, ",") + "|" + strings.Join(keep, ",")
	if key == s.exportKey {
		return nil
	}
	var sets []*gobgpapi.DefinedSet
	var stmts []*gobgpapi.Statement
	neighbors := func(name string) *gobgpapi.Conditions {
		return &gobgpapi.Conditions{NeighborSet: &gobgpapi.MatchSet{Type: gobgpapi.MatchSet_TYPE_ANY, Name: name}}
	}
	if len(keep) > 0 {
		sets = append(sets, &gobgpapi.DefinedSet{DefinedType: gobgpapi.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: "keep-next-hop", List: keep})
		stmts = append(stmts, &gobgpapi.Statement{Name: "keep-next-hop", Conditions: neighbors("keep-next-hop"),
			Actions: &gobgpapi.Actions{Nexthop: &gobgpapi.NexthopAction{Unchanged: true}, RouteAction: gobgpapi.RouteAction_ROUTE_ACTION_ACCEPT}})
	}
	if len(ext) > 0 {
		sets = append(sets, &gobgpapi.DefinedSet{DefinedType: gobgpapi.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: "external", List: ext})
		own := neighbors("external")
		own.RouteType = gobgpapi.Conditions_ROUTE_TYPE_LOCAL
		stmts = append(stmts,
			&gobgpapi.Statement{Name: "external-own", Conditions: own, Actions: &gobgpapi.Actions{RouteAction: gobgpapi.RouteAction_ROUTE_ACTION_ACCEPT}},
			&gobgpapi.Statement{Name: "external-other", Conditions: neighbors("external"), Actions: &gobgpapi.Actions{RouteAction: gobgpapi.RouteAction_ROUTE_ACTION_REJECT}})
	}
	req := &gobgpapi.SetPoliciesRequest{DefinedSets: sets}
	assign := &gobgpapi.PolicyAssignment{Name: "global", Direction: gobgpapi.PolicyDirection_POLICY_DIRECTION_EXPORT,
		DefaultAction: gobgpapi.RouteAction_ROUTE_ACTION_ACCEPT}
	if len(stmts) > 0 {
		req.Policies = []*gobgpapi.Policy{{Name: exportPolicy, Statements: stmts}}
		assign.Policies = []*gobgpapi.Policy{{Name: exportPolicy}}
	}
	// Unassign first: the policy in use cannot be replaced.
	if err := s.srv.SetPolicyAssignment(ctx, &gobgpapi.SetPolicyAssignmentRequest{Assignment: &gobgpapi.PolicyAssignment{Name: "global",
		Direction: gobgpapi.PolicyDirection_POLICY_DIRECTION_EXPORT, DefaultAction: gobgpapi.RouteAction_ROUTE_ACTION_ACCEPT}}); err != nil {
		return fmt.Errorf("BGP export policy: %w", err)
	}
	if err := s.srv.SetPolicies(ctx, req); err != nil {
		return fmt.Errorf("BGP export policy: %w", err)
	}
	if err := s.srv.SetPolicyAssignment(ctx, &gobgpapi.SetPolicyAssignmentRequest{Assignment: assign}); err != nil {
		return fmt.Errorf("BGP export policy: %w", err)
	}
	s.exportKey = key
	return nil
}
