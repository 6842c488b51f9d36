// Package lab builds throwaway test hosts on one Linux machine: named network
// namespaces joined by veth pairs with link-local and TEST-NET addresses, and
// processes running inside them. Nothing is added to the root network
// namespace; the only thing outside the lab's namespaces is a private bpffs
// mounted on a temporary directory, and Close, a Session or sweep-tests
// removes all of it, also after a failed, panicked or killed run.
package lab
