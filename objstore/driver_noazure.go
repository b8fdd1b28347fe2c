//go:build breakwater_noazure

package objstore

const azureLeftOutBy = "breakwater_noazure"
