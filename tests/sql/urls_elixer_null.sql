SELECT elixer_url(NULL)
