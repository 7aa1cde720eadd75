// Package plugins will hold the gRPC sink plugin protocol, SDK and host
// (next milestone); see README.md.
package plugins
