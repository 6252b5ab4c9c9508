package ipam

import "strings"

// HandleFor names a Docker allocation after the endpoint's MAC, which Docker
// sends with RequestAddress (RequiresMACAddress) and again with
// CreateEndpoint; the handle key also carries the host, so two hosts never
// share a handle even with the same MAC.
func HandleFor(mac string) string {
	m := strings.ToLower(strings.NewReplacer(":", "", "-", "", ".", "").Replace(strings.TrimSpace(mac)))
	if m == "" {
		return "docker.anon"
	}
	return "docker." + SanitizeHandle(m)
}

// AdoptedHandle is the handle of an endpoint rebuilt from the kernel after
// its records were lost.
func AdoptedHandle(endpointID string) string {
	return "adopted." + SanitizeHandle(abbrevID(endpointID))
}

// SanitizeHandle makes a handle ID safe as a key segment.
func SanitizeHandle(h string) string { return strings.NewReplacer("/", "_", " ", "_").Replace(h) }

func orUnknown(s string) string {
	if s == "" {
		return "unknown host"
	}
	return s
}
