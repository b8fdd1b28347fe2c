//go:build breakwater_nogcs

package objstore

const gcsLeftOutBy = "breakwater_nogcs"

func gcsNotFound(error) bool { return false }
