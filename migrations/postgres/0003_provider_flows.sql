-- The redirect_uri a provider flow's authorize request used: the token
-- request must repeat it exactly.
ALTER TABLE login_flows ADD COLUMN redirect_uri TEXT;
