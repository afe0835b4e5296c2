-- Creates and loads tables t<lo> .. t<hi> of the multi-table database of
-- the restore benchmark's --jobs part (tests/bench/restore.sh, BENCH_JOBS):
-- :rows rows each (id, then four md5 strings that differ from table to
-- table), then a primary key on id and an index on a, then VACUUM ANALYZE.
-- restore.sh runs two of these at once, on the two halves of the tables:
--
--   psql -X -q -v ON_ERROR_STOP=1 -v lo=1 -v hi=12 -v rows=100000 -f tests/bench/restore-jobs.sql DBURL
--
-- Each statement is its own transaction (\gexec), so VACUUM may run.
SELECT format('CREATE TABLE t%s (id bigint NOT NULL, a text, b text, c text, d text)', i)
FROM generate_series(:lo, :hi) AS i \gexec

SELECT format($q$INSERT INTO t%1$s
    SELECT g, md5(g::text || 'a%1$s'), md5(g::text || 'b%1$s'), md5(g::text || 'c%1$s'), md5(g::text || 'd%1$s')
    FROM generate_series(1, %2$s) AS g$q$, i, :rows)
FROM generate_series(:lo, :hi) AS i \gexec

SELECT format('ALTER TABLE t%1$s ADD PRIMARY KEY (id)', i) FROM generate_series(:lo, :hi) AS i \gexec
SELECT format('CREATE INDEX t%1$s_a ON t%1$s (a)', i) FROM generate_series(:lo, :hi) AS i \gexec
SELECT format('VACUUM ANALYZE t%s', i) FROM generate_series(:lo, :hi) AS i \gexec
