SELECT * FROM fof_groups('sources', 0)
