package main

import _ "embed"

// The baselines, written into the work directory for each bench.
var (
	//go:embed naive.py
	naivePy []byte
	//go:embed producer.py
	producerPy []byte
)
