-- Relay leadership as a lease with an expiry, renewed by the leader. Unlike a session
-- advisory lock, a lease runs out when its holder stops answering (SIGSTOP, a hung
-- host) even if its TCP connection stays open, so a follower takes over.
create table relay_lease (
    relay text primary key,
    holder uuid not null,
    expires_at timestamptz not null
);
