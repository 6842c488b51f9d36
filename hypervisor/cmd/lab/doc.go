// Command lab stands a small Palisade site up on this machine, inside network
// namespaces: a host running fastpathd on 169.254.1.1:2222 and an appliance
// running slowpathd, bound to each other. Ctrl-C (or --for) tears it all
// down; `lab down` removes what a killed lab left, `lab sweep-tests` what
// killed test processes left.
package main
