// Test infrastructure only: a CoreDNS with just the plugins the tests use, so SIP distribution
// is tested against the records a cluster's DNS serves from the real API (headless Service A and
// SRV records from EndpointSlices), not against an emulation of them.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"bind", "errors", "ready", "kubernetes"}
}

func main() { coremain.Run() }
