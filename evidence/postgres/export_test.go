package postgres

// Classify is classify, for the tests of real PostgreSQL errors.
var Classify = classify
