//go:build tools

// Package tools pins the docker compose CLI as a build dependency of this module.
package tools

import _ "github.com/docker/compose/v2/cmd"
