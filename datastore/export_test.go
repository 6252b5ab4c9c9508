package datastore

// Unreachable is unreachable, for the external tests.
var Unreachable = unreachable
