package api

import "time"

// BGPStatus is the BGP speaker's state, as the daemon reports it on
// /Calico.Status (calicoctl node status).
type BGPStatus struct {
	Enabled  bool   `json:"enabled"`
	Off      string `json:"off,omitempty"` // why BGP is not running
	ASNumber uint32 `json:"asNumber,omitempty"`
	RouterID string `json:"routerID,omitempty"`
	Listen   string `json:"listen,omitempty"` // "10.0.0.1:179, [fd00::1]:179"
	// MD5 says whether the kernel can sign TCP segments (TCP_MD5SIG) for
	// peers with a password.
	MD5       string          `json:"md5,omitempty"`
	Peers     []BGPPeerStatus `json:"peers,omitempty"`
	Announced []string        `json:"announced,omitempty"`
	Error     string          `json:"error,omitempty"`
	// Installed lists the learned routes to other nodes' blocks in the
	// kernel (protocol 79, behind the route sync's); LearnedOff says why
	// none are used, InstallError what failed.
	Installed    []string `json:"installed,omitempty"`
	LearnedOff   string   `json:"learnedOff,omitempty"`
	InstallError string   `json:"installError,omitempty"`
}

// BGPPeerStatus is one session, in Calico's columns and then what the
// peer sent.
type BGPPeerStatus struct {
	Address  string    `json:"address"`
	Type     string    `json:"type"` // node-to-node mesh, global, node specific, route reflector (client)
	Name     string    `json:"name"` // the node or BGPPeer
	ASNumber uint32    `json:"asNumber"`
	State    string    `json:"state"` // up, start, connect, ...
	Since    time.Time `json:"since,omitzero"`
	Info     string    `json:"info"` // Established, or why not
	// Received counts the routes the peer sent (IPv4 and IPv6), Prefixes
	// lists them (the first few).
	Received   int      `json:"received"`
	Accepted   int      `json:"accepted"`
	Advertised int      `json:"advertised"`
	Prefixes   []string `json:"prefixes,omitempty"`
}
