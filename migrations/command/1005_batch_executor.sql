-- Running batches are found by status when sweeping for abandoned ones.
create index batches_running_idx on batches (heartbeat_at) where status = 'running';
