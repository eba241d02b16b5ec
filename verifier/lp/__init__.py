"""Linear programming with HiGHS (highspy): exact decisions where the network is linear."""
