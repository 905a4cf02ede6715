-- The ingest writes ifu_index.url in Python; the macro must agree on every cube.
SELECT count(*) AS cubes, count(*) FILTER (WHERE cube_url(shotid, ifuslot) <> url) AS differing FROM ifu_index
