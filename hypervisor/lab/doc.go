// Package lab builds throwaway test hosts on one Linux machine: named network
// namespaces joined by veth pairs with link-local and TEST-NET addresses, and
// processes running inside them. Everything it creates lives inside its own
// namespaces (nothing is added to the root namespace) and Close removes it
// all, also when a test fails or panics.
package lab
