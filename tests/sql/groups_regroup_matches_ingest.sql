-- Regrouping every source in SQL at the ingest's 1.5" gives the materialised membership, row by row.
SELECT count(*) AS n_rows, count(*) FILTER (WHERE regrouped.group_id = members.group_id) AS n_same
FROM fof_groups('sources', 1.5) AS regrouped
JOIN read_parquet('source_group_members/source_group_members/dataset/*/*/*/*.parquet') AS members
    USING (source_id)
