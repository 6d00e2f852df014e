"""The seed papers' data interventions, one file each, all datatrove pipeline steps reading a stored safety score."""
