module example.com/fanout-example

go 1.19
