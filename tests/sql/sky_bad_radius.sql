SELECT * FROM cone('detections', 150.23189, 2.363963, 0)
