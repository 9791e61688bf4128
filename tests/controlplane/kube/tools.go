//go:build tools

// Package tools pins the control-plane commands that `go build` makes for the tests.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
