//go:build tools

// Package tools pins the etcd server command that `go build` makes for the tests.
package tools

import _ "go.etcd.io/etcd/server/v3"
