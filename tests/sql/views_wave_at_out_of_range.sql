SELECT wave_at(1036)
