-- Sessions are updated in place all the time (last-seen times, in batches):
-- room left in each page lets PostgreSQL keep the new row version on the
-- same page without touching the indexes (a HOT update), so a touch does not
-- write four index entries and their pages. Holds for pages written from now
-- on; `VACUUM FULL sessions` applies it to the pages already there.
ALTER TABLE sessions SET (fillfactor = 80);
