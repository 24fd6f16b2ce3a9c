module github.com/treeverse/lakefs/modules/catalog/factory

go 1.25.8

require github.com/treeverse/lakefs v1.80.0
