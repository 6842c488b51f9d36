// Package policytest draws random policies and packets from one small
// universe of addresses and ports, so that rules overlap often: the
// compiler, the reference classifier and the kernel are checked against each
// other on them.
package policytest
