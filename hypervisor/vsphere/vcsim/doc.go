// Package vcsim runs govmomi's vCenter simulator in process for Palisade's
// tests and lab, with the extensions Palisade needs where the simulator
// lacks a method or a behaviour (each listed in docs/vsphere-simulator.md).
// The client side is never faked: everything talks SOAP to the simulator.
package vcsim
