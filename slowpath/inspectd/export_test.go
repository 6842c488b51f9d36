package inspectd

// ShardOf is the worker a flow goes to, for the external tests that place
// flows on chosen workers: they must use the service's own function, not a
// copy of it.
var ShardOf = (*Service).shard
