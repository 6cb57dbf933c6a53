"""A page and a chapter through preprocess -> RAP -> ICP -> GSRP; run guards; the session that keeps models loaded."""
