# Label schemas, queues, leases and annotations arrive with the labelling queue.
